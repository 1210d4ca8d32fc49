"""Remote delivery: SMTP client, MX choice, routes, tcpto, cluster."""
