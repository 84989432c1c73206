# The hopgate gateway on Nomad without Docker: the raw_exec driver runs the
# static binary installed on each client (bin/hopgate from `make build`,
# copied to hopgate_binary). Everything else as in hopgate.nomad.hcl.

variable "hopgate_binary" {
  type    = string
  default = "/usr/local/bin/hopgate"
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "otlp_endpoint" {
  type    = string
  default = ""
}

job "hopgate" {
  datacenters = var.datacenters
  type        = "system"

  update {
    max_parallel = 1
    stagger      = "30s"
  }

  group "gateway" {
    constraint {
      attribute = "${attr.kernel.name}"
      value     = "linux"
    }

    constraint {
      attribute = "${attr.driver.raw_exec}"
      value     = "1"
    }

    network {
      port "http" {
        static = 8080
      }
      port "admin" {
        static = 9901
      }
    }

    restart {
      attempts = 5
      interval = "5m"
      delay    = "5s"
      mode     = "delay"
    }

    task "hopgate" {
      driver       = "raw_exec"
      kill_signal  = "SIGTERM"
      kill_timeout = "20s"

      config {
        command = var.hopgate_binary
        args    = ["-listen", ":${NOMAD_PORT_http}", "-admin", "127.0.0.1:${NOMAD_PORT_admin}"]
      }

      env {
        CONSUL_HTTP_ADDR            = "${attr.unique.network.ip-address}:8500"
        OTEL_EXPORTER_OTLP_ENDPOINT = var.otlp_endpoint
      }

      resources {
        cpu    = 500
        memory = 128
      }
    }
  }
}
