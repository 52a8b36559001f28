"""orchgate: identity-aware reverse proxy for Airflow and Prefect."""
