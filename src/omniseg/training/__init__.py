"""Training the specialist: the recipe and its loop (:mod:`.train`) and its cached input pipeline (:mod:`.data`).

May import: the shared modules, ``config``, ``datasets``, ``models`` (the network and its checkpoint) and ``scoring``.
Never ``store``, ``inference``, ``study`` or ``cli``.
"""
