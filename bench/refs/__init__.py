"""Reference servers measured beside cbstop, on the same server and worker count."""
