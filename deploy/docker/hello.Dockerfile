# The hello demo backend: one static binary on an empty base.
#
# Built by `make images` from a context that holds only what is copied here
# (bin/image-context/hello/): the binary, built with CGO_ENABLED=0, and the
# build machine's CA bundle.
FROM scratch

ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="hopgate-hello" \
      org.opencontainers.image.description="hopgate's self-registering demo backend" \
      org.opencontainers.image.source="https://github.com/hopgate/hopgate" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"

COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY hello /hello

USER 65534:65534
EXPOSE 8080
# A fixed port in a container (the health check needs to know it); the
# address registered with Consul is detected toward the agent.
ENTRYPOINT ["/hello"]
CMD ["-listen", ":8080"]
HEALTHCHECK --interval=10s --timeout=4s --start-period=5s --retries=3 \
    CMD ["/hello", "probe", "http://127.0.0.1:8080/healthz"]
