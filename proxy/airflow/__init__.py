"""Airflow-specific steps of the request path: many-DAG requests, secrets, run stamps."""
