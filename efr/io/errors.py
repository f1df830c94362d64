"""The one exception type the command-line scripts turn into a clear message.

Library code raises EFRError (or a subclass) for anything the user can fix: a
missing folder, an unreadable photo, an unknown label.  The scripts print its
message and exit non-zero without a traceback; anything else is a bug and keeps
its traceback.
"""


class EFRError(Exception):
    """A problem with the user's input or settings, with a message that says what to do."""
