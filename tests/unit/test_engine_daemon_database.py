"""The settings of ketchd's SQLite connection."""

from __future__ import annotations

from pathlib import Path

from ketch.engine.daemon import PAGE_CACHE_KIB, open_database


def test_open_database_limits_page_cache(tmp_path: Path) -> None:
    db = open_database(tmp_path / "ketch.db")
    try:
        # A negative cache_size is a limit in KiB rather than in pages.
        assert db.execute("PRAGMA cache_size").fetchone()[0] == -PAGE_CACHE_KIB
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


def test_open_database_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "ketch.db"
    db = open_database(path)
    db.close()

    assert path.stat().st_mode & 0o777 == 0o600
