"""From Python annotations to one protobuf file descriptor, its message classes and its text."""
