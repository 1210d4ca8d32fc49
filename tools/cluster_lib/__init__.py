"""The three-node qldap cluster lab (``tools/cluster up|test|down``): namespaces, slapds, roots, scenarios."""
