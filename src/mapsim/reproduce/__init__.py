"""The main job: reproduce the MAP paper end to end and say how faithful it is.

:mod:`.config` describes a run (TOML), :mod:`.pipeline` runs its resumable
stages, :mod:`.report` writes the markdown/JSON report and figures.
"""
