"""Console entry points, one module per qmail program name plus the umbrella `qldap`."""
