package backend

import (
	"errors"
	"flag"
	"fmt"

	"github.com/hopgate/hopgate/discovery/routetag"
)

// InstanceFlags are the flags of every binary that registers an instance
// (hello, hopgate join): what to register, under which name and routes, at
// which address and id.
type InstanceFlags struct {
	Service   string
	Routes    []string
	Advertise string
	ID        string
}

// RegisterInstanceFlags adds -service, -route (repeatable), -advertise and
// -id to fs. An empty defaultService makes -service required.
func RegisterInstanceFlags(fs *flag.FlagSet, defaultService string) *InstanceFlags {
	f := &InstanceFlags{Service: defaultService}
	usage := "Consul service `name`"
	if defaultService == "" {
		usage += " (required)"
	}
	fs.StringVar(&f.Service, "service", defaultService, usage)
	fs.Func("route", "route `value` registered as the tag gateway.route=<value>, [host]/path-prefix[ key=value...] (default \"/\"; repeatable)", func(s string) error {
		if _, _, err := routetag.Parse(s); err != nil {
			return err
		}
		f.Routes = append(f.Routes, s)
		return nil
	})
	fs.StringVar(&f.Advertise, "advertise", "", "`address` (IP or host name, no port) registered for the gateway to dial (default: the local address of the route toward the Consul agent)")
	fs.StringVar(&f.ID, "id", "", "instance `id` (default <service>-<hostname>-<port>-<random>)")
	return f
}

// Check validates the values after fs.Parse, in one line naming the flag,
// and defaults the routes to "/".
func (f *InstanceFlags) Check() error {
	if f.Service == "" {
		return errors.New("-service is required: the Consul service name to register")
	}
	if err := ValidateServiceName(f.Service); err != nil {
		return fmt.Errorf("invalid value %q for flag -service: %v", f.Service, err)
	}
	if f.ID != "" {
		if err := ValidateID(f.ID); err != nil {
			return fmt.Errorf("invalid value %q for flag -id: %v", f.ID, err)
		}
	}
	if f.Advertise != "" {
		if err := ValidateAddress(f.Advertise); err != nil {
			return fmt.Errorf("invalid value %q for flag -advertise: %v", f.Advertise, err)
		}
	}
	if len(f.Routes) == 0 {
		f.Routes = []string{"/"}
	}
	return nil
}
