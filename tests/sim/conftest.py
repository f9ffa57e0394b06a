"""metis-sim tests render headless: choose MuJoCo's EGL backend before anything imports mujoco."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("LP_NUM_THREADS", "1")
