#!/usr/bin/env bash
# The test command: installs what is missing, builds the guests, runs every test project.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$root/scripts/setup.sh"
dotnet build "$root/LiveMigration.sln" -c Release -nologo -v q -clp:ErrorsOnly
# One test project at a time (-m:1): the migration and dashboard tests time real hosts, and five projects
# sharing two cores made their deadlines flaky.
# minimal (not quiet) console logging: a failure prints its message and stack, which CI keeps.
dotnet test "$root/LiveMigration.sln" -c Release --no-build -nologo -v q -m:1 --logger "console;verbosity=minimal" "$@"
