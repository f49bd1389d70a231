// Program otelcol is the OpenTelemetry Collector the e2e tests receive OTLP traces and metrics
// with: the OTLP receiver (gRPC and HTTP) and the contrib file exporter, nothing else.
//
// It mirrors what the collector builder (go.opentelemetry.io/collector/cmd/builder, templates
// main.go.tmpl, main_others.go.tmpl and components.go.tmpl) generates for these components, folded
// into one file and without the optional component→module maps that only `otelcol components`
// prints. Writing it by hand spares a code generation step: the components are pinned by this
// module's go.mod like every other e2e tool (see e2e/tools/update).
package main

import (
	"os"

	"github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/service/telemetry/otelconftelemetry"
)

// version is set by e2e/bin/build-tools (-X main.version=...).
var version = "dev"

func components() (otelcol.Factories, error) {
	var err error
	// The builder's default telemetry module; it serves the collector's own logs and metrics.
	factories := otelcol.Factories{Telemetry: otelconftelemetry.NewFactory()}
	if factories.Receivers, err = otelcol.MakeFactoryMap[receiver.Factory](otlpreceiver.NewFactory()); err != nil {
		return otelcol.Factories{}, err
	}
	if factories.Exporters, err = otelcol.MakeFactoryMap[exporter.Factory](fileexporter.NewFactory()); err != nil {
		return otelcol.Factories{}, err
	}
	return factories, nil
}

func main() {
	set := otelcol.CollectorSettings{
		BuildInfo: component.BuildInfo{
			Command:     "otelcol",
			Description: "OpenTelemetry Collector for the rl-swarm-operator e2e tests (OTLP in, JSON file out)",
			Version:     version,
		},
		Factories: components,
		// file: for `--config file:/path`; env: because NewCommand makes it the default scheme
		// (`${VAR}` in a config) and refuses to start without it. The builder's other default
		// providers (http, https, yaml) are left out: the tests always write the config to a file.
		ConfigProviderSettings: otelcol.ConfigProviderSettings{
			ResolverSettings: confmap.ResolverSettings{
				ProviderFactories: []confmap.ProviderFactory{envprovider.NewFactory(), fileprovider.NewFactory()},
			},
		},
	}
	// cobra has already printed the error, as in the builder's main.go.
	if err := otelcol.NewCommand(set).Execute(); err != nil {
		os.Exit(1)
	}
}
