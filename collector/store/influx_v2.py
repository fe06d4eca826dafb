"""InfluxDB 2.x, 3.x and Cloud: writes through the v2 API (influxdb-client), reads with InfluxQL.

Reads go to the v1-compatible ``/query`` endpoint with the same token, the bucket standing for
the database (InfluxDB 2.x needs a DBRP mapping for the bucket; 3.x and Cloud have one).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Self, cast

import urllib3
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from collector.config import StoreSection
from collector.store import StoreRejected, StoreUnavailable
from collector.store.influx_v1 import TOKEN_ENV, InfluxV1Store, _read_secret

log = logging.getLogger(__name__)

# The library declares the precision constants as str but its signature wants WritePrecision.
NS_PRECISION: WritePrecision = cast("WritePrecision", WritePrecision.NS)


class InfluxV2Store(InfluxV1Store):
    """Line protocol through the v2 write API; InfluxQL through the v1-compatible endpoint."""

    kind = "influxdb-v2"

    def __init__(
        self,
        url: str,
        *,
        org: str,
        bucket: str,
        token: str,
        timeout_s: float = 10.0,
        gzip_writes: bool = True,
    ) -> None:
        super().__init__(url, bucket, token=token, create_database=False, timeout_s=timeout_s, gzip_writes=gzip_writes)
        self.org = org
        self.bucket = bucket
        self.client = InfluxDBClient(
            url=url, token=token, org=org, timeout=int(timeout_s * 1000), enable_gzip=gzip_writes
        )
        self.write_api = self.client.write_api(write_options=SYNCHRONOUS)

    @classmethod
    def from_config(cls, section: StoreSection) -> Self:
        """A store from the [store] section (api = "v2")."""
        token = _read_secret(section.token_file, TOKEN_ENV)
        if not (section.org and section.bucket and token):
            raise StoreUnavailable("api = 'v2' needs org, bucket and a token (token_file)")
        return cls(
            section.url,
            org=section.org,
            bucket=section.bucket,
            token=token,
            timeout_s=section.timeout_s,
            gzip_writes=section.gzip,
        )

    def __repr__(self) -> str:
        return f"InfluxV2Store({self.url}, org={self.org!r}, bucket={self.bucket!r})"

    def open(self) -> None:
        """Check the server answers /ping."""
        try:
            ok = self.client.ping()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreUnavailable(f"{self.url}: {exc}") from exc
        if not ok:
            raise StoreUnavailable(f"{self.url}: /ping failed")

    def close(self) -> None:
        """Close the client and the query connections."""
        self.client.close()  # type: ignore[no-untyped-call]
        super().close()

    def write_lines(self, lines: Sequence[str]) -> None:
        """Write lines through the v2 API; StoreRejected for bad data, StoreUnavailable otherwise."""
        if not lines:
            return
        try:
            self.write_api.write(
                bucket=self.bucket, org=self.org, record="\n".join(lines), write_precision=NS_PRECISION
            )
        except ApiException as exc:
            reason = f"{self.url}: {exc.status} {(exc.body or exc.reason or '')!s:.500}"
            if exc.status in (400, 413, 422):
                raise StoreRejected(reason) from exc
            raise StoreUnavailable(reason) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StoreUnavailable(f"{self.url}: {exc}") from exc
