"""The built-in tasks, one module each (registry names ``pick_place``, ``open_drawer``,
``close_laptop``, ``bimanual_drawer``; entry-point group ``metis.envs``)."""
