"""The built-in tasks, one module each: the paper's ``pick_place``, ``open_drawer``,
``close_laptop``, ``bimanual_drawer`` and the pre-training tasks ``lift_cube``, ``close_drawer``
(entry-point group ``metis.envs``)."""
