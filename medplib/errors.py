"""Errors whose message is meant for the person who caused them."""


class UserInputError(ValueError):
    """Bad input a user can fix; the message is one actionable sentence.

    Command-line entry points print it without a traceback and exit with status 2.
    """
