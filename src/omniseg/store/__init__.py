"""The store: one SQLite database that is the source of truth (:mod:`.database`), its schema (:mod:`.schema`), the
answer archive beside it (:mod:`.archive`: every raw API answer, kept before it is decoded), what both SQLite
files need (:mod:`.sqlite`), the merge of shard stores into one (:mod:`.merge`), and one module per group of tables
that owns every statement touching them: :mod:`.runs`, :mod:`.workers`, :mod:`.results`, :mod:`.masks`,
:mod:`.bookings`, :mod:`.jobs`, :mod:`.subsets`, :mod:`.reviews`.

Every (sample, model) pair asked for ends as one row; the bookkeeping of answers (each booked once) and of
workers (one process per model) lives here, and every SQL statement of the package. May import: the shared
modules, ``scoring`` (its columns) and ``models`` (roles). Never ``inference``, ``study`` or ``cli``.
"""
