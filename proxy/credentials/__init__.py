"""Upstream credentials: what orchgate sends upstream in place of the caller's token."""

from __future__ import annotations

from proxy.catalog.operation import Action
from proxy.credentials.airflow import AirflowServiceToken, AirflowTokens, Post
from proxy.credentials.prefect import PrefectAuth
from proxy.identity import Principal
from proxy.settings import Settings

__all__ = ["AirflowServiceToken", "AirflowTokens", "Credentials", "PrefectAuth"]


class Credentials:
    def __init__(self, settings: Settings, airflow_post: Post | None = None) -> None:
        airflow = settings.upstream("airflow")
        prefect = settings.upstream("prefect")
        self.airflow: AirflowTokens | AirflowServiceToken | None = None
        if airflow and airflow.airflow and airflow.airflow.mode == "password":
            assert airflow_post is not None, "the password mode exchanges at Airflow itself"
            self.airflow = AirflowServiceToken(airflow.airflow, airflow_post)
        elif airflow and airflow.airflow:
            self.airflow = AirflowTokens(airflow.airflow)
        self.prefect = PrefectAuth(prefect.prefect.auth_string) \
            if prefect and prefect.prefect else None

    def header(self, system: str, principal: Principal, action: Action) -> tuple[bytes, bytes]:
        """The `Authorization` header for a call to `system` on behalf of `principal`."""
        if system == "airflow":
            assert self.airflow is not None
            return b"authorization", self.airflow.header(principal.name, action)
        assert self.prefect is not None
        return b"authorization", self.prefect.header()
