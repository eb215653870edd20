"""The run record, under both the engine (which writes it) and the report (which reads it): the journal
(:mod:`~migrator.runs.journal`), its typed events (:mod:`~migrator.runs.events`) and the run folders
(:mod:`~migrator.runs.rundir`)."""
