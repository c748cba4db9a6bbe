"""TLS at the edge: ClientHello peeking, certificates by SNI, and ACME issuance/renewal.

Data flow of one TLS connection (the edge drives it; see ``standalone`` for a working model)::

    first bytes --clienthello.ClientHelloReader--> ClientHello (SNI, ALPN, raw bytes) | Reject
      passthrough port: route by hello.server_name, replay hello.raw to the backend untouched
      terminating port: certcache.choose_context(hello, cache, tls_alpn01)
          acme-tls/1 only -> challenges.TlsAlpn01Responder (exact name, never the cache)
          otherwise       -> CertCache.prepare(sni): exact, then *.parent; negative = alert
      --> SSLObject/MemoryBIO handshake with hello.raw replayed --> HTTP (h2 | http/1.1)

Data flow of certificates::

    roost certs add/import --API (api.certs)--> catalog certs/<hostname> (key sealed)
    manager.CertManager (watch certs/) --acme_client.AcmeIssuer (acme lib, worker thread)-->
        challenges.Http01Responder / TlsAlpn01Responder (consulted by the edge) --> CA
    issued chain + sealed key --> catalog --watch--> CertCache drops the name, reloads it

Pure modules (no I/O, clock or randomness): ``clienthello``, ``hostnames``. ``pki`` and
``contexts`` are synchronous helpers (``cryptography``, ``ssl``); the rest is asyncio.
"""
