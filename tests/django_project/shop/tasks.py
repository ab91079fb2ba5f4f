"""The test project's tasks."""

import time

from celery import shared_task


@shared_task(name="shop.square")
def square(x):
    return x * x


@shared_task(name="shop.total")
def total(values):
    return sum(values)


@shared_task(name="shop.sleep")
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@shared_task(name="shop.on_error")
def on_error(request, exc, traceback):
    """An old-style errback: records that it ran (and where) in a file named by the test."""
    import os
    import socket

    path = os.environ.get("CG_ERRBACK_LOG")
    if path:
        with open(path, "a") as out:
            out.write(f"{request.id} {type(exc).__name__} {socket.gethostname()} {os.getpid()}\n")
