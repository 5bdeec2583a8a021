"""The ``ketchd`` command: ketch.engine.daemon, with ssl left out of the process until a
TLS connection needs it (see ketch.deferred_ssl).

It lives outside ``ketch.engine`` because importing that package imports asyncio.
"""

from ketch import deferred_ssl


def main() -> None:
    """Run ketchd with ssl left out until it is needed."""
    deferred_ssl.leave_out()

    from ketch.engine.daemon import main as run_daemon

    run_daemon()


if __name__ == "__main__":
    main()
