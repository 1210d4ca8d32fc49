"""The on-disk queue and the injector that writes it (qmail-queue)."""
