"""The store: one SQLite database that is the source of truth (:mod:`.database`), its schema (:mod:`.schema`), and
the merge of shard stores into one (:mod:`.merge`).

Every (sample, model) pair asked for ends as one row; the bookkeeping of answers (each booked once) and of
workers (one process per model) lives here. May import: the shared modules, ``scoring`` (its columns),
``models`` (roles) and ``models.api.archive`` (the checks of a SQLite file both databases share). Never ``evaluation``, ``study`` or ``cli``.
"""
