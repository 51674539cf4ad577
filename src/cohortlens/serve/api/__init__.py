"""The HTTP API: one router module per area (:mod:`.routes`), shared dependencies
(:mod:`.deps`), the credential check (:mod:`.auth`), errors (:mod:`.errors`), offline docs
(:mod:`.docs`), assembled by :mod:`.main`."""
