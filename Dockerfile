# Portcullis container image: a static binary on a distroless base (no shell, no package
# manager, CA certificates and a non-root user included). The binary is built by
# scripts/build-static, the same script that builds it without Docker: profile-guided,
# so the build runs Portcullis once, instrumented, on loopback (scripts/build-pgo).
#
#   docker build -t portcullis .
#   docker run -p 8080:8080 -e UPSTREAM_URL=http://app:3000 ... portcullis

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN OUT_DIR=/out scripts/build-static

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/portcullis /usr/local/bin/portcullis
# 65532 is distroless's `nonroot`; Kubernetes can check runAsNonRoot against the number.
USER 65532:65532
# Writable state (the SQLite SCIM directory, when used) belongs on a volume; the root
# filesystem can stay read-only.
WORKDIR /var/lib/portcullis
ENV LISTEN_ADDR=0.0.0.0:8080 \
    SCIM__DATABASE_URL=sqlite:///var/lib/portcullis/scim.db
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve"]
