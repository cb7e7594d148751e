from __future__ import annotations

from pathlib import Path

from codebooks.bundle import Bundle
from codebooks.report import write_report


def test_the_report_draws_usage_perplexity_and_collisions(tmp_path: Path, bundle: Bundle) -> None:
    written = write_report(bundle, tmp_path)
    names = {p.name for p in written}
    assert names == {"usage.png", "perplexity.png", "collisions.png", "README.md"}
    for png in tmp_path.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 5000  # a drawn chart, not an empty canvas
    summary = (tmp_path / "README.md").read_text()
    assert bundle.version in summary
    assert "![perplexity](perplexity.png)" in summary
    assert "residual MSE" in summary
