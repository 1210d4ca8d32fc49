"""qldap: a qmail-ldap style mail server whose users live in an LDAP directory."""

__version__ = "0.1.0"
