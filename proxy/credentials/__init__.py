"""Upstream credentials: what orchgate sends upstream in place of the caller's token."""

from __future__ import annotations

from proxy.catalog.operation import Action
from proxy.credentials.airflow import AirflowTokens
from proxy.credentials.prefect import PrefectAuth
from proxy.identity import Principal
from proxy.settings import Settings

__all__ = ["AirflowTokens", "Credentials", "PrefectAuth"]


class Credentials:
    def __init__(self, settings: Settings) -> None:
        airflow = settings.upstream("airflow")
        prefect = settings.upstream("prefect")
        self.airflow = AirflowTokens(airflow.airflow) if airflow and airflow.airflow else None
        self.prefect = PrefectAuth(prefect.prefect.auth_string) \
            if prefect and prefect.prefect else None

    def header(self, system: str, principal: Principal, action: Action) -> tuple[bytes, bytes]:
        """The `Authorization` header for a call to `system` on behalf of `principal`."""
        if system == "airflow":
            assert self.airflow is not None
            return b"authorization", self.airflow.header(principal.name, action)
        assert self.prefect is not None
        return b"authorization", self.prefect.header()
