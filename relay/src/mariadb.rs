//! MariaDB cold store sink (mysql_async). To be built.
