#!/usr/bin/env bash
# Rebuilds LiveMigration.sln from every project in the tree (used to settle merge conflicts in it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rm -f LiveMigration.sln
dotnet new sln -n LiveMigration --format sln >/dev/null
find src tests bench -name '*.csproj' -not -path '*/bin/*' -not -path '*/obj/*' | sort | xargs dotnet sln LiveMigration.sln add >/dev/null
