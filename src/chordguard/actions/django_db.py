"""Writing django-celery-results' chord state (``django-db``): the only Django import on the
write side, made when a django-db chord is failed (Django is set up by then)."""

from __future__ import annotations


def disarm_django_chord(group_id: str) -> int:
    """Delete the chord's ``ChordCounter`` row so no late header part can count it down to 0
    and publish the callback over its failure (the part logs "Can't find ChordCounter").
    Returns the number of rows deleted (0: already gone, perhaps counted to 0 by a part that
    then published the callback)."""
    from django.db import connections, router, transaction
    from django_celery_results.models import ChordCounter

    alias = router.db_for_write(ChordCounter)
    try:
        with transaction.atomic(using=alias):
            # DELETE waits for the row lock of a part counting down, then finds what it left
            deleted, _ = ChordCounter.objects.filter(group_id=group_id).delete()
    finally:
        connections[alias].close()  # runs in a thread of its own (``within``): leave nothing
    return deleted
