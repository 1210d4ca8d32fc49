"""Authentication: the checkpassword-style login modules (the password schemes are in qldap.passwords)."""
