"""The experiment files, one per experiment, each with a `get_config()`.

A package so that code (the studies in vivit_adapter/studies) finds them through the
import system, wherever the project is installed, not through the repository layout.
"""
