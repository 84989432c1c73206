# The hopgate gateway: one static binary on an empty base.
#
# Built by `make images` from a context that holds only what is copied here
# (bin/image-context/hopgate/): the binary, built with CGO_ENABLED=0, and the
# build machine's CA bundle, for OTLP or Consul over TLS.
FROM scratch

ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="hopgate" \
      org.opencontainers.image.description="Consul-driven HTTP gateway" \
      org.opencontainers.image.source="https://github.com/hopgate/hopgate" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"

COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY hopgate /hopgate

# nobody:nogroup; the gateway binds no privileged port.
USER 65534:65534
EXPOSE 8080 9901
# The admin API must listen beyond loopback to be published, so the gateway
# refuses to start without HOPGATE_ADMIN_TOKEN (docker run -e ...); keep
# 9901 unpublished or bound to a private address in production.
ENTRYPOINT ["/hopgate"]
CMD ["-listen", ":8080", "-admin", "0.0.0.0:9901"]
# No shell or curl in the image: the binary probes itself.
HEALTHCHECK --interval=10s --timeout=4s --start-period=5s --retries=3 \
    CMD ["/hopgate", "probe", "http://127.0.0.1:9901/readyz"]
