# Debian packages (CPack DEB, `make package`): bulkhead (service, CLI, helpers, units,
# configuration, man pages, completion) and bulkhead-dev (header, pkg-config file, CMake package,
# an example plugin). Built from a tree configured for /usr with BULKHEAD_PACKAGE_DEB=ON
# (scripts/make-package.sh); docs/packaging.md explains the choices and lintian's remaining tags.
option(BULKHEAD_PACKAGE_DEB "Install Debian's per-package copyright and changelog" OFF)
if(BULKHEAD_PACKAGE_DEB)
  set(changelog ${CMAKE_BINARY_DIR}/dist/changelog.Debian.gz)
  add_custom_command(OUTPUT ${changelog}
    COMMAND gzip -9n -c ${PROJECT_SOURCE_DIR}/dist/debian/changelog > ${changelog}
    DEPENDS ${PROJECT_SOURCE_DIR}/dist/debian/changelog VERBATIM)
  add_custom_target(debian-changelog ALL DEPENDS ${changelog})
  foreach(component bulkhead bulkhead-dev)
    install(FILES dist/debian/copyright ${changelog}
      DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/${component} COMPONENT ${component})
  endforeach()
endif()

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME bulkhead)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "Bulkhead maintainers <bulkhead@example.org>")
# No CPACK_PACKAGE_DESCRIPTION_SUMMARY: each component description's first line is its synopsis.
set(CPACK_PACKAGE_DIRECTORY ${CMAKE_BINARY_DIR}/packages)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL bulkhead bulkhead-dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_STRIP_FILES ON)

set(CPACK_DEBIAN_BULKHEAD_PACKAGE_NAME bulkhead)
set(CPACK_DEBIAN_BULKHEAD_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_BULKHEAD_PACKAGE_RECOMMENDS "systemd, passt")
set(CPACK_COMPONENT_BULKHEAD_DESCRIPTION
  "Linux distributions in per-user namespace VMs, with isolated plugins\n\
bulkheadd runs Linux distributions for local users, each user's inside a\n\
lightweight VM of their own (a namespace sandbox with cgroup limits), and lets\n\
third-party plugins hook that lifecycle, each plugin in its own host process.\n\
The package holds the service, the bulkhead command, their helpers and systemd\n\
units with socket activation.")
set(CPACK_DEBIAN_BULKHEAD_PACKAGE_CONTROL_EXTRA
  "${PROJECT_SOURCE_DIR}/dist/debian/postinst;${PROJECT_SOURCE_DIR}/dist/debian/prerm;${PROJECT_SOURCE_DIR}/dist/debian/postrm;${PROJECT_SOURCE_DIR}/dist/debian/conffiles")
set(CPACK_DEBIAN_BULKHEAD_PACKAGE_CONTROL_STRICT_PERMISSION ON)

set(CPACK_DEBIAN_BULKHEAD-DEV_PACKAGE_NAME bulkhead-dev)
set(CPACK_DEBIAN_BULKHEAD-DEV_PACKAGE_ARCHITECTURE all)
set(CPACK_DEBIAN_BULKHEAD-DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_BULKHEAD-DEV_PACKAGE_RECOMMENDS "pkg-config")
set(CPACK_DEBIAN_BULKHEAD-DEV_PACKAGE_SUGGESTS "bulkhead")
set(CPACK_COMPONENT_BULKHEAD-DEV_DESCRIPTION
  "SDK for Bulkhead plugins\n\
The C header of the Bulkhead plugin API v1, a pkg-config file\n\
(bulkhead-plugin), a CMake package (find_package(BulkheadPlugin),\n\
bulkhead_add_plugin()) and an example plugin.")
include(CPack)
