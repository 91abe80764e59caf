#include "platform.h"

int main(void)
{
    uart_puts("Hello from LiveMigration guest!\n");
    return 0;
}
