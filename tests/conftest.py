"""Test setup: 8 forced CPU devices, set before jax is imported (jax-practices §9)."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402
from absl import flags  # noqa: E402

flags.FLAGS.mark_as_parsed()


# Parity tests import their torch references (and the CBFE community-detection tests the optional
# `infomap` extra) with `pytest.importorskip`. Where the references must be there (CI sets
# DENSE_JAX_REQUIRE_REFERENCES=1), such a skip is turned into a failure, so that a missing
# reference can never pass as a silent skip.
REFERENCES = ("torch", "dinov2", "diffsort", "infomap")


def missing_reference(report) -> str | None:
    """The skip reason of `report` if it skipped because a test-only reference is missing."""
    if not report.skipped:
        return None
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if any(f"could not import '{name}" in reason for name in REFERENCES):
        return reason
    return None


def _require_references(report) -> None:
    reason = missing_reference(report)
    if reason is not None and os.environ.get("DENSE_JAX_REQUIRE_REFERENCES") == "1":
        report.outcome = "failed"
        report.longrepr = f"{reason}: a test-only reference is missing (DENSE_JAX_REQUIRE_REFERENCES=1)"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    _require_references(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    _require_references(report)
    return report
