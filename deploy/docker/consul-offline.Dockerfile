# A stand-in for the official hashicorp/consul image, for machines that
# cannot pull images (the end-to-end tests build it): bin/consul, built from
# source by `make tools` with CGO_ENABLED=0, on an empty base. It takes the
# same command as the official image's default, `agent -dev -client 0.0.0.0`.
FROM scratch
COPY consul /consul
# -dev keeps its state in memory; an empty, writable /tmp for anything else.
COPY --chown=65534:65534 tmp /tmp
USER 65534:65534
EXPOSE 8500 8600/udp
ENTRYPOINT ["/consul"]
CMD ["agent", "-dev", "-client", "0.0.0.0"]
