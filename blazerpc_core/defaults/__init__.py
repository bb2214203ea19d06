"""The built-in behaviour of blazerpc, each module an ordinary plugin (see ``blazerpc plugins``).

Defaults for first-answer hooks are ``trylast``, so any third-party plugin overrides them.
"""
