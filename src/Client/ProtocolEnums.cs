using System.Diagnostics.CodeAnalysis;
using LiveMigration.Migration.Protocol;

namespace LiveMigration.Client;

/// <summary>
/// protobuf's JsonFormatter (`--json`) names an enum value by reflecting over the enum's fields
/// (its one trim warning, IL2067 in OriginalEnumValueHelper): keep every field of the protocol's enums,
/// or a value the trimmer dropped would print as a number where the full CLI prints its name.
/// </summary>
internal static class ProtocolEnums
{
    private const DynamicallyAccessedMemberTypes Fields = DynamicallyAccessedMemberTypes.PublicFields | DynamicallyAccessedMemberTypes.NonPublicFields;

    [DynamicDependency(Fields, typeof(Purpose))]
    [DynamicDependency(Fields, typeof(GuestStatus))]
    [DynamicDependency(Fields, typeof(DestinationState))]
    [DynamicDependency(Fields, typeof(Strategy))]
    [DynamicDependency(Fields, typeof(MigrationPhase))]
    [DynamicDependency(Fields, typeof(Decision))]
    [DynamicDependency(Fields, typeof(ArrivalState))]
    public static void Keep() { }
}
