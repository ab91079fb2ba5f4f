"""Named errors. Every one carries a message fit to show a user as it is."""


class ChordguardError(Exception):
    """Base class for chordguard's errors."""


class UnknownChordError(ChordguardError):
    """No source knows a chord by that group id or callback id."""

    def __init__(self, chord_id: str) -> None:
        super().__init__(f"unknown chord: {chord_id!r} is neither an in-flight chord's group id "
                         "nor its callback task id")
        self.chord_id = chord_id


class UnreachableError(ChordguardError):
    """A broker, result backend or store did not answer in time."""


class CannotVouchError(UnreachableError):
    """What the monitor saw cannot vouch for an answer: a place did not answer, the view was
    incomplete, or nothing reads this app's chords (the CLI exits 3: unknown)."""


class ConfigurationError(ChordguardError):
    """The app or the options given cannot work."""


class DurableChordFailed(ChordguardError):
    """A durable chord ended failed (a header failed, its deadline passed, it was revoked)."""

    def __init__(self, chord_id: str, reason: str) -> None:
        super().__init__(f"durable chord {chord_id} failed: {reason}")
        self.chord_id, self.reason = chord_id, reason


class BarrierExists(ChordguardError):
    """A barrier with this id is already in the store (nothing was written)."""

    def __init__(self, barrier_id: str) -> None:
        super().__init__(f"a barrier {barrier_id!r} already exists")
        self.barrier_id = barrier_id


class CircuitOpenError(ChordguardError):
    """A guarded callback was not run: its breaker is open or it already ran once."""


class NoStoreError(ChordguardError):
    """The store a read-only command was pointed at does not exist (it is never created)."""


class DeadLetterError(ChordguardError):
    """A dead letter cannot be found, replayed or dropped as asked."""
