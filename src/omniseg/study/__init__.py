"""The study: curation of the easiest and hardest cases (:mod:`.curate`, image strata: :mod:`.difficulty`), the
statistics (:mod:`.stats`, :mod:`.claims`, :mod:`.routing`), and the report that tests the claims
(:mod:`.findings`, :mod:`.caveats`, :mod:`.figures`, :mod:`.manifest`; :mod:`.report` builds it as one typed
``Report``, whose document of :mod:`.document` blocks :mod:`.report_html` and Markdown render alike), all from the
store; :mod:`.demo` runs the whole job.

The last stage: may import the shared modules, ``datasets``, ``models``, ``scoring`` and ``store``; ``demo``
(the whole job) also ``config``, ``training``, ``inference`` and ``standins`` (the local stand-in). Never ``cli``.
"""
