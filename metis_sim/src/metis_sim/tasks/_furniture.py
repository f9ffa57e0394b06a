"""A cabinet with a drawer and a bar handle, shared by the drawer tasks.

Cabinet frame: origin on the table at the middle of the carcass front edge, x into the cabinet
(away from the robot), z up. The drawer slides out along -x (0 to 25 cm); its front panel sits
outside the carcass and cabinet-drawer contacts are excluded (the feasibility study's pitfalls).
"""

from __future__ import annotations

DEPTH, HALF_WIDTH, HEIGHT = 0.26, 0.13, 0.14
HANDLE_OFFSET = 0.05  # bar centre in front of the drawer front panel
PANEL = 0.015  # front panel thickness
HANDLE_HEIGHT = HEIGHT / 2
SLIDE_RANGE = 0.25
#: Drawer interior in the drawer frame: x range, |y| bound, bottom surface height.
INTERIOR = ((0.01, 0.228), HALF_WIDTH - 0.022, 0.02)


def cabinet_xml(*, handle_half_length: float = 0.07, handle_radius: float = 0.006) -> str:
    """MJCF of the cabinet body ``cabinet`` with the drawer body ``drawer`` (slide ``drawer_slide``)."""
    w, d, h = HALF_WIDTH, DEPTH, HEIGHT
    bar_x = -PANEL - HANDLE_OFFSET
    wood = 'rgba="0.72 0.60 0.45 1" contype="1" conaffinity="3" friction="1 0.01 0.0002"'
    front = 'rgba="0.80 0.68 0.52 1" contype="1" conaffinity="3" friction="1 0.01 0.0002"'
    metal = (
        'rgba="0.25 0.25 0.28 1" contype="1" conaffinity="3" friction="1 0.01 0.0002" condim="4"'
    )
    return f"""
    <body name="cabinet" pos="0.6 0 0.75">
      <geom name="cab_bottom" type="box" pos="{d / 2} 0 0.005" size="{d / 2} {w} 0.005" {wood}/>
      <geom name="cab_top" type="box" pos="{d / 2} 0 {h - 0.005}" size="{d / 2} {w} 0.005" {wood}/>
      <geom name="cab_left" type="box" pos="{d / 2} {w - 0.005} {h / 2}" size="{d / 2} 0.005 {h / 2}" {wood}/>
      <geom name="cab_right" type="box" pos="{d / 2} {-w + 0.005} {h / 2}" size="{d / 2} 0.005 {h / 2}" {wood}/>
      <geom name="cab_back" type="box" pos="{d - 0.005} 0 {h / 2}" size="0.005 {w} {h / 2}" {wood}/>
      <body name="drawer" pos="0 0 0">
        <joint name="drawer_slide" type="slide" axis="-1 0 0" range="0 {SLIDE_RANGE}" damping="3" frictionloss="0.5" armature="0.05"/>
        <inertial pos="0.12 0 0.05" mass="0.6" diaginertia="0.005 0.005 0.005"/>
        <geom name="drawer_front" type="box" pos="{-PANEL / 2} 0 {h / 2}" size="{PANEL / 2} {w - 0.002} {h / 2 - 0.003}" {front}/>
        <geom name="drawer_bottom" type="box" pos="0.12 0 0.015" size="0.12 {w - 0.015} 0.005" {wood}/>
        <geom name="drawer_left" type="box" pos="0.12 {w - 0.015} 0.055" size="0.12 0.004 0.04" {wood}/>
        <geom name="drawer_right" type="box" pos="0.12 {-w + 0.015} 0.055" size="0.12 0.004 0.04" {wood}/>
        <geom name="drawer_back" type="box" pos="0.236 0 0.055" size="0.004 {w - 0.015} 0.04" {wood}/>
        <geom name="handle_post_l" type="box" pos="{(bar_x - PANEL) / 2} {handle_half_length - 0.01} {HANDLE_HEIGHT}" size="{HANDLE_OFFSET / 2} 0.005 0.005" {metal}/>
        <geom name="handle_post_r" type="box" pos="{(bar_x - PANEL) / 2} {-handle_half_length + 0.01} {HANDLE_HEIGHT}" size="{HANDLE_OFFSET / 2} 0.005 0.005" {metal}/>
        <geom name="handle" type="capsule" fromto="{bar_x} {-handle_half_length} {HANDLE_HEIGHT} {bar_x} {handle_half_length} {HANDLE_HEIGHT}" size="{handle_radius}" {metal}/>
      </body>
    </body>"""


CABINET_CONTACTS = '<contact><exclude body1="cabinet" body2="drawer"/></contact>'
