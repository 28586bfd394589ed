"""Evaluation: tasks, answer extraction, the code sandbox, model backends, scoring and reports."""
