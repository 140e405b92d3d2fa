package cli

import (
	"context"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/surgeplatform/surge/api"
	"github.com/surgeplatform/surge/client"
)

// Dynamic completion (cobra's __complete): names read from the API with
// the command line's --api, --token-file, -n and --context, within
// completionTimeout, so that a shell never hangs on an unreachable
// server; an error completes nothing.

// completionTimeout bounds one completion's requests.
const completionTimeout = 3 * time.Second

type completer func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective)

// completeNames completes one argument from list, and no more arguments
// once max are given (0 for any number).
func completeNames(newClient clientFunc, max int, list func(ctx context.Context, c *client.Client, args []string) ([]string, error)) completer {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if max > 0 && len(args) >= max {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c, err := newClient()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
		defer cancel()
		names, err := list(ctx, c, args)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []string
		for _, n := range names {
			if strings.HasPrefix(n, toComplete) {
				out = append(out, n)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// namesOf lists the names of the objects of type T in ns ("" for every
// namespace) that query selects: what completion offers.
func namesOf[T any, P api.ObjectPtr[T]](ctx context.Context, c *client.Client, ns string, query url.Values) ([]string, error) {
	l, err := client.List[T, P](ctx, c, ns, query)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(l.Items))
	for i := range l.Items {
		out[i] = P(&l.Items[i]).GetMetadata().Name
	}
	return out, nil
}

func functionNames(ctx context.Context, c *client.Client, _ []string) ([]string, error) {
	return namesOf[api.Function](ctx, c, c.Namespace(), nil)
}

// completeFunctions completes one function name.
func completeFunctions(newClient clientFunc) completer {
	return completeNames(newClient, 1, functionNames)
}

// completeFunctionsAny completes function names, as many as wanted (rm).
func completeFunctionsAny(newClient clientFunc) completer {
	return completeNames(newClient, 0, functionNames)
}

// completeDeployArgs completes deploy's NAME, then lets the shell complete
// the DIR.
func completeDeployArgs(newClient clientFunc) completer {
	names := completeFunctions(newClient)
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) == 0 && !strings.ContainsAny(toComplete, "/.") {
			out, _ := names(cmd, args, toComplete)
			return out, cobra.ShellCompDirectiveDefault
		}
		return nil, cobra.ShellCompDirectiveFilterDirs
	}
}

// functionArg is the function named on the command line, for completing
// the flags that name its revisions and replicas.
func functionArg(args []string) url.Values {
	if len(args) == 0 {
		return nil
	}
	return url.Values{"function": {args[0]}}
}

// completeRevisions completes revision names: of the function the command
// names, else of every function.
func completeRevisions(newClient clientFunc) completer {
	return completeNames(newClient, 0, func(ctx context.Context, c *client.Client, args []string) ([]string, error) {
		return namesOf[api.Revision](ctx, c, c.Namespace(), functionArg(args))
	})
}

// completeReplicas completes replica names, as completeRevisions does.
func completeReplicas(newClient clientFunc) completer {
	return completeNames(newClient, 0, func(ctx context.Context, c *client.Client, args []string) ([]string, error) {
		return namesOf[api.Replica](ctx, c, c.Namespace(), functionArg(args))
	})
}

// completeNodes completes node names, as many as wanted.
func completeNodes(newClient clientFunc) completer {
	return completeNames(newClient, 0, func(ctx context.Context, c *client.Client, _ []string) ([]string, error) {
		return namesOf[api.Node](ctx, c, "", nil)
	})
}
