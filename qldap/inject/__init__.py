"""qmail-inject and sendmail: complete a locally submitted message's header and queue it (qmail-inject(1))."""
