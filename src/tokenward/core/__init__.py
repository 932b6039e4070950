"""Pure rules: no I/O, no settings, no clock reads (the time is always passed in).

Sessions and rotation, refresh and access token codecs, the keyring, passwords, users and
security events. Imported by every layer above; imports nothing of them.
"""
