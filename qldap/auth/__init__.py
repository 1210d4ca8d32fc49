"""Authentication: password schemes and the checkpassword-style login modules."""
