"""Configuration as code: export sites, meters and sources to YAML or JSON, and import such a file back.

This module is the public face (the CLI and the tests use only it); the work is split by responsibility:
- `core.catalog.config_file`: the file's format and text forms, and the bounds on a file (size, aliases, depth, counts);
- `core.catalog.config_export`: the export, deterministic and without secrets;
- `core.catalog.config_snapshot`: the stored configuration as an import sees it, looked up by name;
- `core.catalog.config_validation`: the file's problems against that snapshot, the quota plan's included;
- `core.catalog.config_plan`: the writes that merge the file, and their counts;
- here: the import's sequence, and what makes it safe beside other writers.

An import *merges*: rows are matched by name (as people read them, like the page: `models.name_key`), what is
missing is created, what differs is updated, and sites, meters or sources absent from the file are never deleted.
The whole file is validated first, with the page's rules and messages, then written in one transaction, or not at
all. Credentials come inline or, better, as {"env": "VARIABLE"} so that the file itself can be committed.

The database is held only for the writes. Validation and the plan run against a snapshot of the stored
configuration read in one short read-only connection; the write transaction then checks that the stored
configuration is still the one validated (`catalog.fingerprint`, a few ms) and writes. If something changed
meanwhile (another tab, another import), the import validates again against the new state, up to `MAX_ATTEMPTS`
times, so a change cannot slip between the checks and the writes.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Mapping
from typing import Any

from core.catalog import catalog as cat
from core.catalog.audited import audited_change
from core.catalog.config_export import export_config
from core.catalog.config_file import (
    DEFAULT_LIMITS,
    FORMATS,
    ConfigFileError,
    ConfigFileLimits,
    dump,
    parse,
    read_text,
    screen,
)
from core.catalog.config_plan import ImportReport, Plan, plan_import
from core.catalog.config_snapshot import read_snapshot
from core.catalog.config_validation import PLAN_VARIABLE, ConfigImportError, validate
from core.config import Settings
from core.store.crypto import SecretBox
from core.store.store import Store

log = logging.getLogger(__name__)
__all__ = [
    "FORMATS",
    "MAX_ATTEMPTS",
    "ConfigFileError",
    "ConfigFileLimits",
    "ConfigImportError",
    "ImportReport",
    "dump",
    "export_config",
    "import_config",
    "parse",
    "read_text",
]
MAX_ATTEMPTS = 3  # validations against a stored configuration that keeps changing before the import gives up


def import_config(
    store: Store,
    box: SecretBox,
    data: Any,
    *,
    environ: Mapping[str, str] = os.environ,
    dry_run: bool = False,
    enphase_plan: str | None = None,
    limits: ConfigFileLimits = DEFAULT_LIMITS,
) -> ImportReport:
    """Merge parsed file `data` into the store, or raise `ConfigImportError` with every problem and write nothing.

    Validation ends with the quota plan of the configuration as the import leaves it; `enphase_plan` is the
    `DATACONN_ENPHASE_PLAN` setting (None: read from `environ`, default the smallest plan). It runs outside the
    write transaction, against a snapshot, and the transaction writes only if the stored configuration is still
    that snapshot (see the module's docstring).
    """
    if enphase_plan is None:
        enphase_plan = environ.get(PLAN_VARIABLE, "").strip() or Settings.model_fields["enphase_plan"].default
    if problems := screen(data, limits):
        raise ConfigImportError(problems)
    for _ in range(MAX_ATTEMPTS):
        with store.connect(read_only=True) as con:
            snapshot = read_snapshot(con)
        config = validate(snapshot, box, data, environ, enphase_plan)
        plan = plan_import(box, snapshot, config, dry_run=dry_run)
        if dry_run:
            return plan.report
        if _written(store, box, snapshot.fingerprint, plan):
            report = plan.report
            log.info(
                "configuration imported: sites %s; meters %s; sources %s", report.sites, report.meters, report.sources
            )
            return report
        log.info("the stored configuration changed while the file was being checked: checking it again")
    raise ConfigImportError(
        [
            f"the stored configuration changed {MAX_ATTEMPTS} times while the file was being checked (someone is"
            " editing it, or another import runs): try again in a moment"
        ]
    )


def _written(store: Store, box: SecretBox, fingerprint: tuple[Any, ...], plan: Plan) -> bool:
    """Write the plan if the stored configuration is still the one it was made from; whether it was.

    The parsed file, the snapshot and the plan are millions of objects at the limits, and the garbage collections
    that walked them while the file was held took half the hold (5,000 sites: 290 of 540 ms). They all outlive the
    transaction, so they are frozen out of the garbage collector's walks until it ends (`gc.freeze`: a few lists
    moved, whatever their length).
    """
    gc.freeze()
    try:
        with audited_change(store, origin="config import") as con:
            if cat.fingerprint(con) != fingerprint:
                return False
            plan.write(con, box)
            return True
    finally:
        gc.unfreeze()
