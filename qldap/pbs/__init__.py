"""POP-before-SMTP: pbsdbd, pbsadd, pbscheck."""
