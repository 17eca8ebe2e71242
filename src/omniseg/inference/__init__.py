"""Inference: every (sample, model) pair predicted, scored and recorded (:mod:`.runner`), as batch jobs
(:mod:`.batch`), decoded again from the kept answers (:mod:`.redecode`), or probed live (:mod:`.probe`).

The stage that joins the others: may import the shared modules, ``config`` and ``plugins``, ``datasets``, ``models``,
``scoring`` and ``store``. Never ``training``, ``study`` or ``cli``.
"""
