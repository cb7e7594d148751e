"""The catalog backfill: every item's codes under a new bundle version, then the switch.

`python -m backfill run` stages a version and writes the codes of the bundle's catalog and
of catalog exports (Parquet) under it on Ray Data, one engine per actor; `activate` checks
that the version covers everything readers may ask for and switches them atomically (a
rollback is activating the previous version); `retire` deletes an old version's keys;
`status` shows the versions, their backfills and the service's pods.

Floor 3, beside the service: it stands on `codebooks`, `runtime` and `store`, never on the
service or on torch. Ray is imported by the run alone (`job`, `cluster`).
"""
