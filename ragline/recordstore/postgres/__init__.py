"""The PostgreSQL backend of the record store, the embedding cache and the namespace locks: the state every host of
a deployment shares (chosen by ``database_url``). One module per part, as in ``ragline.recordstore.sqlite``;
``store.PostgresRecordStore``, ``embedding_cache.PostgresEmbeddingCache`` and ``locks.PostgresLocks`` are what the
rest of ragline builds (imported from their modules, so taking a lock does not load numpy)."""
